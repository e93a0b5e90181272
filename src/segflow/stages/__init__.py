"""One module per DVC stage: `run(params, paths)` does the work, `main()` the file I/O."""
