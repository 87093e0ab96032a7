import sys

if sys.argv[1:2] == ["study"]:  # python -m dgm study ...: a study over settings and seeds (dgm.studies)
    from dgm.studies.cli import main
else:
    from dgm.core.cli import main

sys.exit(main())
