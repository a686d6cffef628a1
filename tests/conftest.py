"""Suite-wide plugins: the attack suite's counters and summary line, the hostile stack fixture."""

pytest_plugins = ["tests.security_summary", "tests.integration.attack_kit"]
