"""OpenAI Realtime (GA) behind the component protocol: pure translation, conversation state, audio resampling.

- :mod:`gateway.openai.translate`: pure functions, component messages ↔ OpenAI events;
- :mod:`gateway.openai.bridge`: the per-conversation state (readiness, calls, one response at a time), no I/O;
- :mod:`gateway.openai.audio`: streaming PCM16 resampling to and from 24 kHz;
- :mod:`gateway.upstream.openai`: the WebSocket adapter that feeds the bridge.
"""
