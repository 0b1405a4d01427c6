"""``gateway demo``: a lab a trainer runs in five minutes, on loopback only.

One command brings up demo HTTPS origins with a lab CA of their own, the real ``gateway run``
(trusting that CA upstream, resolving the demo names from a hosts file and refusing every other
name), sample policies, and a demo device: enrolled, with a client certificate in a throwaway NSS
database, its agent and its local proxy running. Everything lives in one directory and goes away
on Ctrl-C (docs/demo.md).

  layout.py    the directory, its files and the ports (one base, four ports)
  pki.py       the lab CA and the origins' leaves, the device CA and its client certificate
  origins.py   the demo sites: one HTTPS listener, a certificate per name (SNI)
  policies.py  the sample policies and their tests (YAML, as policies/examples/demo/*.yaml)
  nss.py       the device's NSS database (certutil, pk12util)
  children.py  child processes: started in their own session, stopped, killed after a timeout
  admin.py     the few admin API calls the lab needs
  device.py    the demo device: enroll, trust, posture pass and fail
  lab.py       the lab: one ordered stack of steps, undone in reverse; the banner
"""
