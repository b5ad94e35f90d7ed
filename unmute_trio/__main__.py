from unmute_trio.cli import main

raise SystemExit(main())
