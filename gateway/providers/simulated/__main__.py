"""``python -m gateway.providers.simulated``: the simulated agent's standalone WebSocket server."""

from gateway.providers.simulated.server import main

if __name__ == "__main__":
    main()
