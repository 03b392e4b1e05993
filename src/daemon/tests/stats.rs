//! uWSGI's stats socket when it lies or hangs.

use super::*;

#[tokio::test]
async fn garbage_from_the_stats_socket_places_nothing() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP_STATS));
    stats_server(
        &h,
        Some(b"HTTP/1.1 200 OK\r\n\r\n{\"workers\": [{\"pid\": \"x\"}"),
    );
    shop(&h, &d, 3);
    full_tick(&mut d).await;
    fast_tick(&mut d).await;
    assert!(d.apps["shop"].workers.is_empty());
    assert_eq!(starts(&d), 0, "placed on a guess: {:?}", d.systemd.calls());
}

#[tokio::test]
async fn a_hanging_stats_socket_places_nothing_and_is_not_asked_every_tick() {
    let h = Host::new(0.3);
    let mut d = h.daemon(h.policy("shop", SHOP_STATS));
    let connections = stats_server(&h, None);
    shop(&h, &d, 3);
    full_tick(&mut d).await;
    for _ in 0..10 {
        fast_tick(&mut d).await;
    }
    assert!(d.apps["shop"].workers.is_empty());
    assert_eq!(starts(&d), 0);
    // Each try costs the whole timeout (500 ms) of a loop that should tick
    // at 10 Hz: the first fails, the next ones wait for the retry time.
    let tries = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        tries <= 2,
        "{tries} connections in one worker tick and 10 host ticks"
    );
}
