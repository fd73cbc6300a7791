"""``make demo`` runs ``certkit demo``: it must work and say what it does."""

from __future__ import annotations

import re

from click.testing import CliRunner

from certkit.cli import main


def test_demo_walks_through_issue_pfx_revoke_crl_and_cleans_up() -> None:
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for step in ("1. Create Contoso's internal CA", "2. Issue the Edge's transport certificate",
                 "3. Check the PFX", "4. The key leaked: revoke", "5. Publish the CRL", "6. Status"):
        assert step in out
    assert re.search(r"thumbprint \(as Exchange shows it\): [0-9A-F]{40}\n", out)
    assert "lint: no problems" in out
    assert "is now revoked (keyCompromise)" in out
    assert "CRL #1, next update" in out
    folder = re.search(r"Working in (\S+) ", out)
    assert folder is not None
    import os

    assert not os.path.exists(folder.group(1))
