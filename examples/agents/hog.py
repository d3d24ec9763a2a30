"""Burns a whole core: throttled to its cpu limit."""
while True:
    pass
