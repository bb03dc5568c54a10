from gateway_gate.cli import main

raise SystemExit(main())
