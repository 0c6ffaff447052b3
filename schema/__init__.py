"""Protocol buffers of so-im: the .proto sources and their generated modules."""
