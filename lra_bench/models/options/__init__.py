"""Every model's options declared once (type, valid range, meaning): the start-up check and the README's tables.

``rules`` is the vocabulary, ``builtin`` the 19 built-in models, ``check`` finds a model's schema (built-in, or a
user's ``model.options_schema``) and checks a composed config, ``table`` prints the README's tables.
"""
