from glasskit.cli import main

raise SystemExit(main())
