"""Pure-torch numeric core: no state, no I/O. Modules in spikevit.nn wrap these."""
