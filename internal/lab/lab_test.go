package lab

import (
	"bytes"
	"testing"
)

// TestLab builds the lab and runs unprotected attacks over both families:
// memcached answers, the victim receives many times what the attacker sent,
// and the large answers reach it as IP fragments.
func TestLab(t *testing.T) {
	l := New(t)
	c, err := l.Dial(l.Attacker, V4.Refl0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := bytes.Repeat([]byte("x"), 100_000)
	if err := c.Set("big", big); err != nil {
		t.Fatal(err)
	}
	for _, fam := range []int{4, 6} {
		for _, cmd := range []string{"stats\r\n", "get big\r\n"} {
			for _, via := range []string{Refl0If, Refl1If} {
				r, err := l.Attack(Attack{Family: fam, Via: via, Command: cmd, Count: 5})
				if err != nil {
					t.Fatalf("IPv%d %q via %s: %v", fam, cmd, via, err)
				}
				t.Logf("IPv%d %-10q via %s: sent %d B, victim link %d pkts %d B, IP %+v, x%.1f", fam, cmd, via, r.RequestBytes, r.Victim.LinkPackets, r.Victim.LinkBytes, r.Victim, r.Amplification())
				if !r.Answered {
					t.Errorf("IPv%d %q via %s: memcached did not answer", fam, cmd, via)
				}
				if r.Amplification() < 10 {
					t.Errorf("IPv%d %q via %s: amplification %.1f, want > 10", fam, cmd, via, r.Amplification())
				}
				if cmd == "get big\r\n" {
					if r.Gets != 5 {
						t.Errorf("memcached counted %d gets, want 5", r.Gets)
					}
					// 100 kB in 1400-byte datagrams, each two fragments.
					if r.Victim.Fragments < 5*2*70 || r.Victim.Reassembled < 5*70 {
						t.Errorf("IPv%d: victim got %d fragments, %d reassembled; want the answers fragmented", fam, r.Victim.Fragments, r.Victim.Reassembled)
					}
				}
			}
		}
	}
}
