"""The results database's one SQLAlchemy MetaData: orm.py and export_orm.py both define
their tables on it (a module of its own, so neither imports the other to find it)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
