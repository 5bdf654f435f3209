"""The registry's HTTP routes, one ``APIRouter`` per resource (``main.py`` joins them), and the dependencies they
share (``deps.py``): everything a route needs comes from ``request.app.state``, so these modules hold no state."""
