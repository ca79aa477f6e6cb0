"""The SASSL stylization explorer (Gradio). Same as `sassl app`; see sassl/app.py and sassl/explorer.py.

    python apps/explorer.py [--host 127.0.0.1] [--port 7860] [--share] [--device auto]
"""
import sys

from sassl.app import main

if __name__ == "__main__":
    sys.exit(main())
