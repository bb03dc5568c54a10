"""Everything that talks to the outside: stores (memory, Redis), key files, upstream platforms."""
