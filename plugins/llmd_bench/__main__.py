from llmd_bench.cli import main

raise SystemExit(main())
