from authgate.cli import main

raise SystemExit(main())
