"""渝快码 ⇄ 电子社保卡 gateway.

One credential for one person: the city code (渝快码), the electronic social security card
(电子社保卡) and the physical card (实体卡), behind dynamic signed codes, OpenID Connect login
and consent-based certificate lookup. See README.md for the architecture map.
"""

__version__ = "0.1.0"
