"""Lightning plumbing shared by every method: module, optimizer + schedule, loggers, checkpoint IO, plots."""
