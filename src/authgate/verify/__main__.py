from authgate.verify.cli import main

raise SystemExit(main())
