"""Running one trial: the epoch loop's driver, its sinks (HDF5, console, background writer, trackers) and faults."""
