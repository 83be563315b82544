"""What each command does, behind the thin command line in cli.py.

`run.py` is check, compare and baseline record (build, start, load, judge, report, save);
`rerender.py` is `leakgate report` (judge a saved run.json again); `options.py` turns the command
line and leakgate.yml into the Config and the paths a run uses, refusing bad input before
anything starts.
"""
