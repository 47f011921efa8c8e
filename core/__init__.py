"""What every stage shares: configuration, errors, logging, the command line."""
