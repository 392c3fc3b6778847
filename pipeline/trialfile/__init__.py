"""A trial's HDF5 file and the folder's records: the store, its journal, reading, the manifest, provenance, cost."""
