import sys

if sys.argv[1:2] == ["study"]:  # python -m dgm study ...: a study over settings and seeds (dgm.studies)
    from dgm.studies.cli import main
elif sys.argv[1:2] == ["arena"]:  # the arena composes families: its CLI lives above them (dgm/arena/cli.py)
    from dgm.arena.cli import main
else:
    from dgm.core.cli import main

sys.exit(main())
