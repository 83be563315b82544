"""Generated protocol buffer modules (see each .proto for the command that regenerates it)."""
