#!/usr/bin/env python3
"""Stands in for the daemon on the system bus: owns org.adaptiveworkers.Daemon
and serves /org/adaptiveworkers/Daemon with every method of
org.adaptiveworkers.Daemon1 (each answers "called NAME") and one property,
so that scenarios/30-dbus-policy.sh can test the installed bus policy
(packaging/dbus/org.adaptiveworkers.Daemon.conf) on its own.

With --try-own it only tries to take the name and exits 0 if the bus
refused (used to check that ordinary users cannot own it).
"""

import sys

import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

NAME = "org.adaptiveworkers.Daemon"
PATH = "/org/adaptiveworkers/Daemon"
IFACE = "org.adaptiveworkers.Daemon1"


class Daemon(dbus.service.Object):
    def _called(self, name):
        return f"called {name}"

    @dbus.service.method(IFACE, out_signature="s")
    def Status(self):
        return self._called("Status")

    @dbus.service.method(IFACE, out_signature="s")
    def Events(self):
        return self._called("Events")

    @dbus.service.method(IFACE, out_signature="s")
    def Workers(self):
        return self._called("Workers")

    @dbus.service.method(IFACE, out_signature="s")
    def Reload(self):
        return self._called("Reload")

    @dbus.service.method(IFACE, in_signature="u", out_signature="s")
    def RecycleWorker(self, pid):
        return self._called("RecycleWorker")

    @dbus.service.method(IFACE, in_signature="s", out_signature="s")
    def PauseApp(self, app):
        return self._called("PauseApp")

    @dbus.service.method(IFACE, in_signature="s", out_signature="s")
    def ResumeApp(self, app):
        return self._called("ResumeApp")

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="ss", out_signature="v")
    def Get(self, iface, prop):
        return self.GetAll(iface)[prop]

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="s", out_signature="a{sv}")
    def GetAll(self, iface):
        return {"Version": dbus.String("fake")}

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="ssv")
    def Set(self, iface, prop, value):
        pass


def main():
    DBusGMainLoop(set_as_default=True)
    bus = dbus.SystemBus()
    if sys.argv[1:] == ["--try-own"]:
        try:
            bus.request_name(NAME, dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
        except dbus.exceptions.DBusException as e:
            print(f"refused: {e.get_dbus_name()}")
            return 0
        print("the bus let this user own the name")
        return 1
    name = dbus.service.BusName(NAME, bus, do_not_queue=True)
    Daemon(name, PATH)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
