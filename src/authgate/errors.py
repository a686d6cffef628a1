"""Error types that cross module boundaries."""


class ConfigError(Exception):
    """Bad configuration: the message names the key and the fix; the CLI exits 2."""

    def __init__(self, key: str, problem: str, fix: str = "") -> None:
        self.key = key
        self.problem = problem
        self.fix = fix
        text = f"{key}: {problem}" if key else problem
        if fix:
            text += f" ({fix})"
        super().__init__(text)
