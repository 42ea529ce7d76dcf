from neuro.cli import main

raise SystemExit(main())
