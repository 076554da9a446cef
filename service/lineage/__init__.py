"""The lineage rules as pure functions over plain rows (``rules``); the lineage repository
(``service.db.repositories.lineage``) loads the rows, calls them and applies what they decide."""
