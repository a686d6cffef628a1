"""Suite-wide plugins: the attack suite's counters and summary line, the hostile stack fixture."""

import os
import tempfile

# The embedded session store of anything started without an explicit place (unit tests'
# AuthzState, `authgate run` without --runtime-dir) goes to a directory of this test run, never
# to the user's ~/.local/state.
os.environ["STATE_DIRECTORY"] = tempfile.mkdtemp(prefix="authgate-test-state-")

pytest_plugins = ["tests.security_summary", "tests.integration.attack_kit"]
