"""The dashboard at the admin server's root: static HTML, one JavaScript module and CSS that call
the admin API with the admin token (no build step; see docs/dashboard.md)."""
