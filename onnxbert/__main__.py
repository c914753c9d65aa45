from onnxbert.cli import main

raise SystemExit(main())
