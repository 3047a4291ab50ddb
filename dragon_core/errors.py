"""Errors shown to the user.

Every message names the node and the input at fault and says how to fix it, because ComfyUI
shows the message verbatim in its error dialog.
"""


class DragonInputError(ValueError):
    """A user input that the method cannot work with."""

    def __init__(self, node: str, input_name: str, problem: str, fix: str):
        if not (node and input_name and problem and fix):
            raise TypeError("a DragonInputError names the node, the input, the problem and the fix")
        self.node, self.input_name, self.problem, self.fix = node, input_name, problem, fix
        super().__init__(f"{node}: input '{input_name}': {problem} {fix}")
