"""The client's version, and the Worker API version it needs."""
__version__ = "0.2.0"

# ModelInfo.api_version the client was written for ("MAJOR.MINOR"). It also speaks every major
# in SUPPORTED_MAJORS: it sets each field whose meaning changed in 2.0 (Tokenize's and
# ModelInput's prepend_bos) explicitly, so a 1.x worker reads its requests alike. A call that
# needs a newer API (hook programs: 1.1; shared memory: 2.1) says so. Small replies in one
# message (2.2) need nothing: the client asks for them and reads either form.
WORKER_API_VERSION = (2, 2)
SUPPORTED_MAJORS = (1, 2)
