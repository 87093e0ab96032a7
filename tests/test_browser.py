"""A real browser: streamlit on a free loopback port, headless Chromium through Playwright."""

import pytest

from conftest import iteration, pause, play, wait_for_app, wait_for_charts
from dgm.ui import plotlyjs

pytestmark = pytest.mark.browser


def test_home_page_renders_in_chromium(app_server, page):
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_server.url + "/")
    wait_for_app(page)
    assert page.locator("h1").first.inner_text() == "DGM Explorer"
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.get_by_text("Four families, four trade-offs").is_visible()
    assert page.locator('[data-testid="stSidebarNav"]').get_by_text("GAN dynamics").is_visible()
    assert not errors, errors


def test_demo_page_step_in_chromium(app_server, page):
    page.goto(app_server.url + "/demo?seed=1")
    wait_for_app(page)
    assert page.get_by_text("Iteration 0", exact=True).is_visible()
    page.get_by_role("button", name="Step ×10").click()
    page.get_by_text("Iteration 10", exact=False).wait_for(timeout=30_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "seed=1" in page.url


def _playing(page, url: str) -> None:
    """Open ``url``, press Play and wait until the run has trained a step."""
    page.goto(url)
    wait_for_app(page)
    page.get_by_role("button", name="Play").click()
    page.get_by_role("button", name="Pause").wait_for(timeout=30_000)
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
                           ".some(e => /Iteration [1-9]/.test(e.textContent))", timeout=60_000)


def test_pause_clicked_twice_stays_paused(app_server, page):
    """Two quick clicks on Pause (a double click, or a second click while the first is handled) pause the
    run: the button is not a toggle that the second click turns back to Play."""
    _playing(page, app_server.url + "/demo?seed=4")
    page.get_by_role("button", name="Pause").dblclick()
    page.get_by_role("button", name="Play").wait_for(timeout=30_000)
    page.get_by_text("paused", exact=False).first.wait_for(timeout=30_000)
    at = iteration(page)
    page.wait_for_timeout(3000)
    assert page.get_by_role("button", name="Play").is_visible() and iteration(page) == at
    assert page.locator('[data-testid="stException"]').count() == 0


def test_a_late_second_click_on_pause_does_not_play_again(app_server, page):
    """The race behind the double click, made certain: the browser's message of a click on Pause is sent to
    the server a second time after the server has taken the first and drawn Play (what a busy browser or a
    slow double click sends). It names the Pause widget, which pauses whatever the latest run drew: the run
    stays paused. (With one widget for both labels the stale click took the button's latest meaning, Play,
    and the run played again: this test failed so.)"""
    sent, server = [], {}

    def relay(ws):  # the page's websocket, passed through; what the page sends is kept
        srv = ws.connect_to_server()
        server["ws"] = srv

        def up(msg):
            sent.append(msg)
            srv.send(msg)
        ws.on_message(up)
        srv.on_message(lambda msg: ws.send(msg))

    page.route_web_socket("**/_stcore/stream", relay)
    _playing(page, app_server.url + "/demo?seed=5")
    mark = len(sent)
    pause(page)
    page.get_by_text("paused", exact=False).first.wait_for(timeout=30_000)
    clicks = [m for m in sent[mark:] if isinstance(m, bytes) and b"demo.pause" in m]
    assert clicks, "no message of the Pause click was seen"
    at = iteration(page)
    server["ws"].send(clicks[0])  # the same click once more, late
    page.wait_for_timeout(3000)
    assert page.get_by_role("button", name="Play").is_visible() and iteration(page) == at
    assert page.locator('[data-testid="stException"]').count() == 0


def test_fresh_server_serves_the_navigation_to_simultaneous_first_visitors(browser):
    """Until app.py first reaches st.navigation, Streamlit would serve new sessions in its legacy
    pages/ mode (file names in the sidebar, the page script run without app.py)."""
    from conftest import AppServer

    server = AppServer().start()
    try:
        ctx = browser.new_context(viewport={"width": 1200, "height": 800})
        pages = [ctx.new_page() for _ in range(3)]
        for pg, path in zip(pages, ["/demo", "/", "/demo?seed=2"]):
            pg.goto(server.url + path, wait_until="commit")
        for pg in pages:
            wait_for_app(pg)
            nav = pg.locator('[data-testid="stSidebarNav"]')
            assert nav.get_by_text("Live loop demo").count() == 1, nav.inner_text()
            assert nav.get_by_text("app", exact=True).count() == 0
        ctx.close()
    finally:
        server.stop()
    assert server.proc.poll() is not None


def test_playing_updates_each_chart_in_place(app_server, page):
    """While a page plays, each chart is updated by Plotly.react in the same plot element (not torn
    down and rebuilt: st.plotly_chart did that, every frame), and the curves are redrawn less often
    than the main view. plotly.js is the partial bundle."""
    page.goto(app_server.url + "/demo?seed=3")
    wait_for_app(page)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=dgmPlot][data-drawn=true]').length == 2")
    # the charts are drawn by plotly's cartesian partial bundle (dgm/ui/plotlyjs.py), which make setup-test fetches
    assert plotlyjs.bundle_dir() == plotlyjs.PARTIAL_DIR, "the partial bundle was not fetched: see make setup-test"
    assert set(page.evaluate("() => Object.keys(window.Plotly.PlotSchema.get().traces)")) == plotlyjs.TRACES
    page.evaluate("""() => {
        window.__svgs = [...document.querySelectorAll('[data-testid=dgmPlot] .main-svg')];
        window.__updates = [0, 0];
        document.querySelectorAll('[data-testid=dgmPlot]').forEach((el, i) =>
            el.on('plotly_afterplot', () => window.__updates[i]++));
    }""")
    page.get_by_role("button", name="Play").click()
    # six redraws of the fit (about a second of play; longer when frames come slowly on a loaded machine)
    page.wait_for_function("() => window.__updates[0] >= 6", timeout=60_000)
    # while it plays (Pause reruns the whole page, which may rebuild a chart whose fragment it cut short)
    same = page.evaluate("() => window.__svgs.every(s => s.isConnected)")
    fit, curves = page.evaluate("() => window.__updates")
    pause(page)
    wait_for_app(page)
    status = page.locator('[data-testid="stCaptionContainer"]', has_text="Iteration").first.inner_text()
    assert "Iteration 0" not in status
    assert curves < fit, (fit, curves)  # the loss curve, about once a second: less often than the fit
    assert same, "a chart's SVG was rebuilt instead of updated"
    assert page.locator('[data-testid="stException"]').count() == 0


def test_a_timer_tick_from_before_a_click_runs_nothing(app_server, page):
    """While a page plays, the browser's frame timer asks the server for a run of the frame's fragment five
    times a second. A tick sent just before a click (Pause) could reach the server behind the click's full run
    and run the fragment after it, and a fragment run's start drops the server's unsent messages of that
    fragment: there, the full run's own drawing of it. The page then lacked blocks that later messages
    addressed, and went blank ("Cannot set a node at a delta path"; about one Pause in 15-30). Each full run
    now gives its fragments new ids (``common.timed_fragment``), so a tick from an earlier run names no
    fragment the page has, and the server runs nothing for it. Here the last tick before each Pause is sent
    again right behind the click, and once more after the page settled: no fragment runs for it, and the page
    never blanks. (Without new ids the late tick reruns the frame: the count below fails.)"""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    ws = {"ticks": [], "arm": False, "fragment_runs": [], "server": None}

    def route(client):
        server = ws["server"] = client.connect_to_server()

        def to_server(msg):
            server.send(msg)
            if not isinstance(msg, (bytes, bytearray)):
                return
            back = BackMsg.FromString(bytes(msg))
            if back.WhichOneof("type") != "rerun_script":
                return
            if back.rerun_script.fragment_id:
                ws["ticks"].append(bytes(msg))
            elif ws["arm"] and ws["ticks"]:  # the click's full rerun: the tick from before it, right behind
                ws["arm"] = False
                server.send(ws["ticks"][-1])

        def to_page(msg):
            client.send(msg)
            if isinstance(msg, (bytes, bytearray)):
                fwd = ForwardMsg.FromString(bytes(msg))
                if fwd.WhichOneof("type") == "new_session" and fwd.metadata.run.fragment_ids:
                    ws["fragment_runs"].append(list(fwd.metadata.run.fragment_ids))

        client.on_message(to_server)
        server.on_message(to_page)

    page.route_web_socket("**/_stcore/stream", route)
    page.goto(app_server.url + "/demo?seed=2")
    wait_for_app(page)
    for _ in range(2):
        play(page)
        page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
                               ".some(e => /Iteration [1-9]/.test(e.textContent))", timeout=60_000)
        page.wait_for_timeout(800)  # some ticks
        ws["arm"] = True
        pause(page)
        wait_for_app(page)
        assert not ws["arm"], "the Pause sent no full rerun to repeat a tick behind"
        page.wait_for_timeout(500)
        runs = len(ws["fragment_runs"])
        stale = BackMsg.FromString(ws["ticks"][-1]).rerun_script.fragment_id
        ws["server"].send(ws["ticks"][-1])  # a tick from the play, once more, to the settled page
        page.wait_for_timeout(1000)  # (a frame's run comes within 0.2 s)
        assert len(ws["fragment_runs"]) == runs, f"a late tick of fragment {stale} ran it: {ws['fragment_runs'][runs:]}"
        assert page.locator('[data-testid="stApp"]').is_visible(), "the page went blank"
        assert "paused" in page.locator('[data-testid="stCaptionContainer"]', has_text="Iteration").first.inner_text()
    assert not [e for e in page.dgm_events if "pageerror" in e], page.dgm_events


def test_dense_traces_are_drawn_on_a_canvas_that_follows_the_legend_and_zoom(app_server, page):
    """The GAN page's main view draws its 1,200 samples and its arrows on a canvas over the plot
    (not as SVG elements): the points are there, a legend click hides them, and zooming redraws them.
    The loss curve, whose axes fit its data, keeps its lines in plotly."""
    page.goto(app_server.url + "/gan?seed=0&steps=300")
    wait_for_app(page, 180_000)
    wait_for_charts(page)
    game = page.locator('[data-testid="stMain"] [data-testid="dgmPlot"]').first
    game.evaluate("""(root) => { window.__orange = () => {  // orange (generated) pixels on the canvas
        const cv = root.querySelector('canvas.dgm-dense');
        const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] > 150 && d[i + 1] < 140 && d[i + 2] < 80 && d[i + 3] > 100) n++;
        return n;
    }; }""")
    assert game.evaluate("(root) => root.querySelectorAll('.scatterlayer .point').length") < 10
    # the heatmap of D is on the canvas too: it covers the plot area
    covered = game.evaluate("""(root) => {
        const cv = root.querySelector('canvas.dgm-dense'), xa = root._fullLayout.xaxis, ya = root._fullLayout.yaxis;
        const r = cv.width / root._fullLayout.width;
        const d = cv.getContext('2d').getImageData(r * xa._offset, r * ya._offset, r * xa._length, r * ya._length).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n / (d.length / 4);
    }""")
    assert covered > 0.95, covered
    # a curve's axes fit its data (autorange): its lines stay with plotly, which must see every point
    losses = page.locator('[data-testid="stMain"] [data-testid="dgmPlot"]', has_text="Losses")
    assert losses.evaluate("(root) => root._fullLayout.xaxis.range[1]") > 250
    before = page.evaluate("() => window.__orange()")
    assert before > 300, before
    toggle = game.locator(".legend .traces", has_text="generated q").locator(".legendtoggle")
    toggle.click()  # the legend entry hides the trace, and its points
    page.wait_for_function(f"() => window.__orange() < {before / 20}", timeout=10_000)
    toggle.click()
    page.wait_for_function(f"() => window.__orange() == {before}", timeout=10_000)
    game.evaluate("(root) => window.Plotly.relayout(root, {'xaxis.range': [0.5, 2.5], 'yaxis.range': [0.5, 2.5]})")
    page.wait_for_function(f"() => window.__orange() != {before} && window.__orange() > 0", timeout=10_000)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_gan_page_redraws_its_main_view_every_frame_and_its_panels_once_a_second(app_server, page):
    """The GAN page is a live.View: the game plane is its main view, redrawn at every frame; the
    learned D, D* and the curves are its panels, a fragment of their own redrawn about once a second."""
    page.goto(app_server.url + "/gan?seed=4")
    wait_for_app(page, 180_000)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=dgmPlot][data-drawn=true]').length >= 4")
    page.evaluate("""() => {
        window.__updates = {};
        document.querySelectorAll('[data-testid=stMain] [data-testid=dgmPlot]').forEach((el) => {
            const title = el.querySelector('.gtitle').textContent.split(':')[0].split('(')[0].trim();
            const name = title.startsWith('Step') ? 'game' : title;
            window.__updates[name] = 0;
            el.on('plotly_afterplot', () => window.__updates[name]++);
        });
    }""")
    page.get_by_role("button", name="Play").click()
    page.wait_for_timeout(2000)
    game_chart = page.locator('[data-testid="stMain"] [data-testid="dgmPlot"]').first
    game_chart.evaluate("(root) => window.Plotly.relayout(root, {'xaxis.range': [0.5, 2.5], 'yaxis.range': [0.5, 2.5]})")
    losses_chart = page.locator('[data-testid="stMain"] [data-testid="dgmPlot"]', has_text="Losses")
    losses_chart.locator(".legend .traces", has_text="G loss").locator(".legendtoggle").click()
    # at least ten frames after the zoom (about two seconds; longer on a loaded machine)
    page.wait_for_function("() => window.__updates.game >= 12", timeout=90_000)
    zoomed = game_chart.evaluate("(root) => [root._fullLayout.xaxis.range, root._fullLayout.yaxis.range]")
    hidden = losses_chart.evaluate("(root) => root._fullData.map(t => t.visible)")
    pause(page)
    wait_for_app(page)
    updates = page.evaluate("() => window.__updates")
    game, learned, losses = updates["game"], updates["Learned D"], updates["Losses"]
    # a reader's zoom, or a trace hidden from the legend, survives the frames that follow
    assert zoomed == [[0.5, 2.5], [0.5, 2.5]], zoomed
    assert hidden == [True, "legendonly"], hidden
    assert game >= 10, updates  # about six frames a second
    assert 3 <= learned < game and 3 <= losses < game, updates  # about once a second (when frames come slowly, nearly every frame)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_flows_page_redraws_its_layer_panels_every_few_seconds_while_it_plays(app_server, page):
    """The flows page's layer-by-layer panels (nine panels of 500 points, the browser's heaviest redraw on
    the page) are redrawn every few seconds while the run plays (flows.LAYERS_EVERY), its other panels about
    once a second and its main view at every frame: they still move, and Pause need not wait behind them."""
    from dgm.ui.flows import LAYERS_EVERY

    page.goto(app_server.url + "/flows?seed=2")
    wait_for_app(page, 180_000)
    keys = ["density", "nll", "layers", "stage"]
    page.wait_for_function("() => document.querySelectorAll('[data-testid=dgmPlot][data-drawn=true]').length >= 6")
    page.evaluate("""(keys) => {
        window.__updates = {};
        for (const k of keys) {
            const el = document.querySelector(`.st-key-flow-${k} [data-testid=dgmPlot]`);
            window.__updates[k] = 0;
            el.on('plotly_afterplot', () => window.__updates[k]++);
        }
    }""", keys)
    page.get_by_role("button", name="Play").click()
    # seven redraws of the panels: about seven seconds of play (longer on a loaded machine)
    page.wait_for_function("() => window.__updates.nll >= 7", timeout=120_000)
    u = page.evaluate("() => window.__updates")  # (read while playing: a Pause's full run redraws every chart)
    pause(page)
    wait_for_app(page)
    # the panel runs come at least a second apart: in seven or more of them, the layer panels were built again
    # once every LAYERS_EVERY seconds (plus Play's full run, and one to round)
    held = u["nll"] / LAYERS_EVERY + 2
    assert 1 <= u["layers"] <= held and 1 <= u["stage"] <= held, u
    assert u["density"] >= 1, u  # the main view moves meanwhile
    assert page.locator('[data-testid="stException"]').count() == 0
