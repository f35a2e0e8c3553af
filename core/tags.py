"""What a model is said to be about: the tags a plugin puts on its models, read by core workflows and the tabs.

Kept in core (plain strings, nothing imported) so workflows such as Family test a constant, never a literal;
``plugins.contract`` re-exports them for plugin authors.
"""

FACES = "faces"  # photos of faces: the Family tab offers it, uploads are face-aligned
DIGITS = "digits"  # handwritten digits
LOCAL_FILE = "stylegan-local"  # added from a file the user supplied (not from a catalog)
