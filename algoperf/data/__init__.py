"""The data side of the core (docs/data.md): the data protocol every pipeline implements
(pipeline.py), the index rules (indices.py), rank shards (sharding.py), in-memory datasets
(arrays.py), the worker-process loader (loader.py), batch pytrees (tree.py) and prefetching."""
