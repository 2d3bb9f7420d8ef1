from geo3d.cli import main

raise SystemExit(main())
