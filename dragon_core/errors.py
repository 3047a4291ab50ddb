"""Errors shown to the user.

Every message names the node and the input at fault and says how to fix it, because ComfyUI
shows the message verbatim in its error dialog.
"""


class DragonInputError(ValueError):
    """A user input that the method cannot work with."""

    def __init__(self, node: str, input_name: str, problem: str, fix: str = ""):
        self.node, self.input_name = node, input_name
        msg = f"{node}: input '{input_name}': {problem}"
        if fix:
            msg += f" {fix}"
        super().__init__(msg)
