"""`python -m npc_voice ...` is `npc-voice ...`."""

import sys

from npc_voice.cli import main

sys.exit(main())
