import signal
import sys

# Ctrl-C while torch and the rest are still importing (the first seconds): a quiet exit with the usual
# code, not Python's KeyboardInterrupt traceback. Each CLI installs its own handlers once it runs.
signal.signal(signal.SIGINT, lambda *_: sys.exit(130))

if sys.argv[1:2] == ["study"]:  # python -m dgm study ...: a study over settings and seeds (dgm.studies)
    from dgm.studies.cli import main
elif sys.argv[1:2] == ["arena"]:  # the arena composes families: its CLI lives above them (dgm/arena/cli.py)
    from dgm.arena.cli import main
elif sys.argv[1:2] == ["prepare"]:  # every lesson's fast-forward, trained ahead of a class (dgm/ui/prepare.py)
    from dgm.ui.prepare import main
else:
    from dgm.core.cli import main

signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(main())
