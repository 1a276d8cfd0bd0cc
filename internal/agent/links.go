package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// defaultNetlinkBuffer holds the link events of a few thousand interfaces
// appearing at once (each RTM_NEWLINK is 1-2 KiB) while a reconcile runs.
const defaultNetlinkBuffer = 8 << 20

// linkWatcher follows the network namespace's interfaces through netlink
// link events and tells the agent's loop when they changed. It never makes
// the kernel wait: events are only counted here, the work is done by the
// loop, so the socket is drained as fast as the kernel fills it.
type linkWatcher struct {
	log    *slog.Logger
	rcvbuf int
	// changed has room for one: a pending wake-up stands for any number
	// of events.
	changed chan struct{}

	mu   sync.Mutex
	full bool     // a resync of everything was asked for
	whys []string // a few of the events, for the log
}

func newLinkWatcher(log *slog.Logger, rcvbuf int) *linkWatcher {
	if rcvbuf <= 0 {
		rcvbuf = defaultNetlinkBuffer
	}
	return &linkWatcher{log: log, rcvbuf: rcvbuf, changed: make(chan struct{}, 1)}
}

func (w *linkWatcher) kick(full bool, why string) {
	w.mu.Lock()
	w.full = w.full || full
	if len(w.whys) < 4 {
		w.whys = append(w.whys, why)
	}
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// take returns what happened since the last take.
func (w *linkWatcher) take() (full bool, whys []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	full, whys = w.full, w.whys
	w.full, w.whys = false, nil
	if len(whys) == 0 {
		whys = []string{"link event"}
	}
	return full, whys
}

// run subscribes to link events until ctx ends. The subscription lists the
// existing links first, so nothing created between the agent's first
// reconcile and the subscription is missed. When it fails (an ENOBUFS
// overrun loses events, so the agent no longer knows what it missed) it
// subscribes again and asks for a resync of everything.
func (w *linkWatcher) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := w.subscribe(ctx)
		if ctx.Err() != nil {
			return
		}
		w.log.Warn("netlink link subscription lost; subscribing again and resynchronising every interface", "error", err)
		w.kick(true, "netlink resubscribed after: "+err.Error())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// subscribe runs one subscription until it fails or ctx ends.
func (w *linkWatcher) subscribe(ctx context.Context) error {
	updates := make(chan netlink.LinkUpdate, 1024)
	done := make(chan struct{})
	errs := make(chan error, 1)
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ListExisting: true,
		ErrorCallback: func(err error) {
			select {
			case errs <- err:
			default:
			}
		},
		ReceiveBufferSize: w.rcvbuf,
		// SO_RCVBUFFORCE: past net.core.rmem_max (needs CAP_NET_ADMIN,
		// which the agent has).
		ReceiveBufferForceSize: true,
	})
	if err != nil {
		close(done)
		return fmt.Errorf("subscribe to link events: %w", err)
	}
	w.log.Debug("netlink link subscription established", "receive_buffer_bytes", w.rcvbuf)
	stop := func() {
		close(done)
		for range updates { // the library closes it once its reader ends
		}
	}
	for {
		select {
		case <-ctx.Done():
			stop()
			return ctx.Err()
		case err := <-errs:
			if errors.Is(err, netlink.ErrDumpInterrupted) {
				// The listing of existing links was inconsistent:
				// resync, the subscription itself is fine.
				w.kick(true, "link listing interrupted")
				continue
			}
			stop()
			return err
		case u, ok := <-updates:
			if !ok {
				// The reader ended; its error, if any, is in errs.
				select {
				case err := <-errs:
					return err
				default:
					return errors.New("link event channel closed")
				}
			}
			w.kick(false, describeUpdate(u))
		}
	}
}

func describeUpdate(u netlink.LinkUpdate) string {
	name := "?"
	if u.Link != nil {
		name = u.Link.Attrs().Name
	}
	switch u.Header.Type {
	case unix.RTM_NEWLINK:
		return fmt.Sprintf("link event: %s (ifindex %d) new or changed", name, u.Index)
	case unix.RTM_DELLINK:
		return fmt.Sprintf("link event: %s (ifindex %d) deleted", name, u.Index)
	}
	return fmt.Sprintf("link event %d: %s (ifindex %d)", u.Header.Type, name, u.Index)
}
