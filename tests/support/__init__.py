"""What every test folder shares, written once: the test clock (``clock``), certificates
(``pki``), waiting on a condition (``wait``), the in-process gateway and its clients (``server``),
the device and policy labs built on it (``devices``, ``policies``), and the pytest fixtures that
``tests/conftest.py`` registers for the whole tree (``fixtures``)."""
