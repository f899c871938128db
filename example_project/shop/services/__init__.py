"""The example shop's services: small modules the example workflows call, one per concern.

They mirror the modules the workflow guide names (``Users``, ``Mailer``, ``Inventory``, ...)
and read and write the models of ``shop.models``. Expected failures are returned as
``("error", reason)`` tuples (or raised, for the mailer and the flaky external API), always
decided by the data, so every outcome of every example can be reproduced.
"""
