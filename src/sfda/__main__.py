from sfda.cli import main

raise SystemExit(main())
