package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/iorrc/rrc/test/lab"
)

func TestZZDebugDownload(t *testing.T) {
	rl := startReplicationLab(t, "brdbg2", "10.94.8")
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const id = "d1"
	addr := startWebPair(ctx, t, rl, id)
	netns := filepath.Join(l.State("a"), "rrc", "netns", l.Namespace("a"), id, id)
	done := make(chan struct{})
	go func() {
		defer close(done)
		took, _, err := lab.Download(l.Netns("client"), addr, lab.WWWBig, 40*time.Second)
		t.Logf("download: %s %v", took, err)
	}()
	for i := 0; i < 40; i++ {
		select {
		case <-done:
			return
		case <-time.After(500 * time.Millisecond):
		}
		out, _ := exec.Command("sh", "-c", "nsenter --net="+netns+" ss -tino state established; nsenter --net="+l.Netns("client")+" ss -tinom state established").CombinedOutput()
		t.Logf("%s", out)
	}
	<-done
}
