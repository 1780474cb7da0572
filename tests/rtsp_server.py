"""A real RTSP server for the camera-input tests: GStreamer's gst-rtsp-server (Debian's
gir1.2-gst-rtsp-server-1.0 + python3-gi, run by the system's python3) serving a live test
pattern as RTP/JPEG, as an IP camera serves its stream.

    /usr/bin/python3 tests/rtsp_server.py PORT /PATH FPS

prints ``ready`` once it listens; runs until killed.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

port, path, fps = sys.argv[1], sys.argv[2], int(sys.argv[3])
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    "( videotestsrc is-live=true pattern=ball "
    f"! video/x-raw,width=320,height=240,framerate={fps}/1,format=I420 "
    "! jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26 )"
)
factory.set_shared(True)
server.get_mount_points().add_factory(path, factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on port {port}")
print("ready", flush=True)
GLib.MainLoop().run()
