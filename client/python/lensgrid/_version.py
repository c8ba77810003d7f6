"""The client's version, and the Worker API version it needs."""
__version__ = "0.2.0"

# ModelInfo.api_version the client was written for ("MAJOR.MINOR"): a worker must have the same
# MAJOR and at least this MINOR (hook programs arrived in 1.1).
WORKER_API_VERSION = (1, 1)
