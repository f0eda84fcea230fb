"""The resolver host: wasmtime engine, the ABI, the instance pool and the resolve core."""
