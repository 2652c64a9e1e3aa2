"""Code shared by the gateway and the workers: protocol models, job envelopes, Redis names, settings.

Nothing in this package opens a socket; it only describes what crosses them.
"""
