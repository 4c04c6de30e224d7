"""labctl: a containerised lab that makes crash, pause and partition visible."""
__version__ = "0.1.0"
