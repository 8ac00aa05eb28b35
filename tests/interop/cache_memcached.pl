#!/usr/bin/perl
#! Cache::Memcached (Debian libcache-memcached-perl) against one repcached node, TAP-style.
#!
#! Usage: perl cache_memcached.pl suite|verify HOST:PORT COUNT
#!   suite   runs the client's basic operations and leaves COUNT keys (perl:keep:N) behind;
#!   verify  checks, on any node, that those COUNT keys hold what suite left.
use strict;
use warnings;
use Cache::Memcached;

my ($mode, $server, $count) = @ARGV;
die "usage: $0 suite|verify HOST:PORT COUNT\n" unless $mode && $server && $count;

my $mc = Cache::Memcached->new({
    servers            => [$server],
    compress_threshold => 10_000,
    connect_timeout    => 2,
    select_timeout     => 2,
});

my $n = 0;
sub ok {
    my ($cond, $what) = @_;
    $n++;
    print(($cond ? "ok" : "not ok") . " $n - $what\n");
}

sub keep_value {
    my ($i) = @_;
    # Binary bytes, a line that looks like a reply, and now and then a value big enough
    # to be compressed by the client (flags bit 2).
    my $v = join('', map { chr(($i * 31 + $_) % 256) } 0 .. ($i % 50));
    $v .= "\r\nEND\r\nVALUE x 0 1\r\n";
    $v .= ('z' x 20_000) if $i % 17 == 0;
    return $v;
}

if ($mode eq 'suite') {
    ok($mc->flush_all, 'flush_all');
    ok($mc->set('perl:a', 'alpha'), 'set');
    ok(($mc->get('perl:a') // '') eq 'alpha', 'get');
    ok(!$mc->add('perl:a', 'other'), 'add on an existing key fails');
    ok($mc->add('perl:b', 'beta'), 'add on a new key');
    ok($mc->replace('perl:a', 'alpha2'), 'replace');
    ok(!$mc->replace('perl:none', 'x'), 'replace on a missing key fails');
    ok(($mc->get('perl:a') // '') eq 'alpha2', 'get after replace');
    ok($mc->set('perl:n', 10), 'set a number');
    ok(($mc->incr('perl:n', 5) // -1) == 15, 'incr');
    ok(($mc->decr('perl:n', 20) // -1) == 0, 'decr stops at 0');
    ok(!defined $mc->incr('perl:missing'), 'incr on a missing key');
    ok($mc->delete('perl:b'), 'delete');
    ok(!defined $mc->get('perl:b'), 'get after delete');
    ok(!$mc->delete('perl:b'), 'delete of a missing key');
    my $ref = { list => [1, 2, 3], name => "h\x{e9}" };
    ok($mc->set('perl:ref', $ref), 'set a reference (Storable, flags bit 1)');
    my $back = $mc->get('perl:ref');
    ok(ref $back eq 'HASH' && "@{$back->{list}}" eq '1 2 3', 'get a reference');
    my $big = join('', map { chr($_ % 251) } 1 .. 300_000);
    ok($mc->set('perl:big', $big), 'set 300 kB (compressed by the client)');
    ok(($mc->get('perl:big') // '') eq $big, 'get 300 kB');
    ok($mc->set('perl:exp', 'soon', 1), 'set with an expiry');
    for my $i (1 .. $count) {
        $mc->set("perl:keep:$i", keep_value($i)) or ok(0, "set perl:keep:$i");
    }
    my $got = $mc->get_multi(map { "perl:keep:$_" } 1 .. $count);
    my $same = grep { ($got->{"perl:keep:$_"} // '') eq keep_value($_) } 1 .. $count;
    ok($same == $count, "get_multi of $count binary values ($same match)");
    my $stats = $mc->stats(['misc']);
    ok($stats && $stats->{hosts}{$server}{misc}{curr_items}, 'stats misc');
} elsif ($mode eq 'verify') {
    my $got = $mc->get_multi(map { "perl:keep:$_" } 1 .. $count);
    my $same = grep { ($got->{"perl:keep:$_"} // '') eq keep_value($_) } 1 .. $count;
    ok($same == $count, "get_multi on the peer: $same of $count match");
    ok(($mc->get('perl:a') // '') eq 'alpha2', 'replaced value on the peer');
    # decr rewrites "15" in place: memcached pads the shorter number with a space.
    ok(($mc->get('perl:n') // '') eq '0 ', 'counter on the peer');
    ok(!defined $mc->get('perl:b'), 'deleted key stays deleted on the peer');
    my $back = $mc->get('perl:ref');
    ok(ref $back eq 'HASH' && $back->{name} eq "h\x{e9}", 'reference on the peer');
} else {
    die "unknown mode $mode\n";
}
print "1..$n\n";
