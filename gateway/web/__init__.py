"""HTTP handlers: parse, call one use case, render. They never reach into adapters."""
